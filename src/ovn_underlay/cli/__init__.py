"""Handlers of the command line's verbs: build the objects, call the library, print."""
