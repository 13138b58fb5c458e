"""``make demo``: the whole story on one machine, told by a customer over the real REST API.

* ``client``: the customer's calls through the Python client (``arbitrage_client``) and the gateway caller;
* ``processes``: the demo's own web, worker, beat and gateway, each logging to a file;
* ``render``: tables, the live state table and the cost summary (pure, tested);
* ``story``: the stages, each with a deadline.

The management command ``manage.py demo`` prepares the dedicated var dir and runs the story.
"""


class DemoFailed(Exception):
    """A stage of the story did not happen; the message is the one-line reason shown to the user."""
