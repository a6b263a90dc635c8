"""`autoresearch dashboard`: a live web view of research runs (app.py serves data.py's read-only
queries and static/). Only `apps` may import it; it imports the web libraries lazily (commands.py).
"""
