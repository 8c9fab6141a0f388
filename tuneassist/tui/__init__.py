"""The Textual front end: checklist, runs and profiles screens over the run store.

The UI process never imports torch: it only reads and writes the store and starts detached workers,
so it opens fast and a crashing run cannot take it down. `tuneassist.tui.app.TuneApp` is the app.
"""
