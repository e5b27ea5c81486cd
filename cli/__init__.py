"""The ``octify`` command: convert a model from the command line and save the result."""
