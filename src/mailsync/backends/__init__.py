"""Backends: one module per protocol or provider, found through :mod:`mailsync._registry`.

These modules are private: applications use :func:`mailsync.connect` and :func:`mailsync.sender`.
Pure protocol logic that does no I/O lives in :mod:`mailsync.protocol`, shared by the sync and
async backends of the same protocol.
"""
