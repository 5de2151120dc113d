"""The legacy injector: write drive content into a guest image's filesystem."""
