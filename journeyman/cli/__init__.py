"""The `journeyman` command: the names and options in ../shared/product/interfaces.md.

One module per command group; each command reads the one `Settings` object (environment
and `.env`) and wires what it needs, and the work itself lives in the modules it calls.
Problems the user can fix are printed as one clear line on stderr with exit status 1,
never as a traceback. Importing the groups registers their commands, in this order.
"""

# isort: off
from journeyman.cli import servers  # noqa: F401
from journeyman.cli import journeys  # noqa: F401
from journeyman.cli import operating  # noqa: F401
from journeyman.cli import controls  # noqa: F401
from journeyman.cli import publishing  # noqa: F401
from journeyman.cli import database  # noqa: F401
from journeyman.cli import parked  # noqa: F401
from journeyman.cli import catalogs  # noqa: F401

# isort: on
from journeyman.cli.common import app
from journeyman.cli.operating import runs_query

__all__ = ["app", "runs_query"]
