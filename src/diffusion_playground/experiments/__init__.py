"""Complete experiment recipes (data + model + training + evaluation) shared by the CLI and the notebooks."""
