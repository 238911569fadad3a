"""What every HTTP area shares: JSON bodies and the error format (``jsonio``), the web guard
(security headers, body deadlines, the client address behind the front: ``webguard``) and the
OpenAPI description's building blocks and assembly (``openapi``)."""
