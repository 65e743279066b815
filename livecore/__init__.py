"""LiveCore domain core: shows, catalogue, deals, reservations, orders, moderation.

Nothing in this package imports a web framework; the gateway drives it.
"""

__version__ = "0.1.0"
