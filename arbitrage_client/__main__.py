"""``python -m arbitrage_client``: the ``arb`` command line."""

from arbitrage_client.cli import main

main(prog_name="arb")
