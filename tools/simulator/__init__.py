"""The city simulator: a synthetic town driving the system over its public API.

``make demo`` runs ``python -m tools.simulator``. It plays every app at once
(:mod:`.agents`) in a town read from the grids' GeoJSON (:mod:`.town`), then checks
what the system did against its own expectations (:mod:`.rules`, :mod:`.checks`)
and prints a 1-3-5 table (:mod:`.report`). :mod:`.stack` picks or starts the stack,
:mod:`.cli` is the command line.

**Time.** The system's clock is real, so the simulation runs in real time. It can run
"faster" only through the system's own settings: with ``--time-scale K`` every
simulated duration is divided by K (think time, time on scene) and every speed
multiplied by K, and when the simulator starts its own stack (``--embedded``) it sets
dispatch's targets and offer timeout to the defaults divided by K (K=10: T1 6 s,
T3 18 s, T5 30 s, offers expire after 3 s). Rankings are unchanged by the scale
(every ETA is divided by the same K). Against a running stack the scale is 1 unless
that stack was started with matching settings.
"""

from tools.simulator.agents import Simulation, simulate
from tools.simulator.checks import double_bookings, nearest_violations, overlapping_offers
from tools.simulator.cli import main
from tools.simulator.model import Checks, Endpoints, OfferSeen, SimConfig, SimResponder, SimResult
from tools.simulator.report import compliance_table, report_text
from tools.simulator.stack import embedded_endpoints, run_embedded, scaled_dispatch_env
from tools.simulator.wire import citizen_addresses, parse_time, sse_messages

__all__ = [
    "Checks",
    "Endpoints",
    "OfferSeen",
    "SimConfig",
    "SimResponder",
    "SimResult",
    "Simulation",
    "citizen_addresses",
    "compliance_table",
    "double_bookings",
    "embedded_endpoints",
    "main",
    "nearest_violations",
    "overlapping_offers",
    "parse_time",
    "report_text",
    "run_embedded",
    "scaled_dispatch_env",
    "simulate",
    "sse_messages",
]
