"""Local stand-ins for the cloud services the pipeline talks to.

Used by the tests and by the local demo. Each fake speaks the real wire protocol on 127.0.0.1
and keeps real state; nothing in `flows/` or `blocks/` knows about them.
"""
