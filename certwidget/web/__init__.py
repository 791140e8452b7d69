"""The web layer: the middleware's endpoints, streaming injection, intake and HTTP helpers.

The wire format (camelCase JSON, multipart fields, cookies, status codes) lives here and
nowhere deeper: intake parses a body into the domain's typed models once, and the layers
below never see a request.
"""
