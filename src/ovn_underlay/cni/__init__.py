"""The CNI protocol layer: request parsing, result types and the command dispatcher.

Everything in this package imports only the standard library, because a CNI
binary starts once per pod network call and its start-up time is on the pod's
critical path.
"""
