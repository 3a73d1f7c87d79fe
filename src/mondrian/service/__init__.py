"""The HTTP service: a FastAPI app over one worker that owns the model.

Import `mondrian.service.app.create_app`; this package's `__init__` stays light so that
`mondrian --help` never pays for FastAPI.
"""
