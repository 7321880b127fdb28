"""The drawing page and `digitserve web`, the small HTTP server that publishes it.

`static/` holds the page (plain HTML, CSS and ES modules; TensorFlow.js comes from the project's
npm install, served locally), `server.py` the read-only server, `paths.py` the path checks,
`settings.py` its settings, `cli.py` the command.
"""
