"""Documents: checks on uploaded certificates and the rendering of filled-in ones.

Nothing here knows HTTP: uploads arrive as bytes and a declared media type.
"""
