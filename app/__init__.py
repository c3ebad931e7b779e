"""The crypto app: a FastAPI API and a Streamlit dashboard over a replicated PostgreSQL.

Writes (the price feed, POST /ticks) go to the primary; reads go to the replicas, falling
back to the primary.  It knows nothing of the lab: every setting comes from APP_* variables
(app/settings.py).  ``python -m app api | dashboard | simulate | schema``.
"""
__version__ = "0.1.0"
