"""The script Streamlit runs (``python -m app dashboard``); the page itself is app/dashboard.py."""
from app.dashboard import main

main()
