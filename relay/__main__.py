"""``python -m ticklake.relay``: run the relay (the same as ``ticklake relay serve``)."""

from ticklake import logs
from ticklake.relay.cli import serve_command

if __name__ == "__main__":
    logs.configure(None, None)
    serve_command()
