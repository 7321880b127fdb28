"""The drawing page and `digitserve web`, the HTTP server that publishes it.

`static/` holds the page (plain HTML, CSS and ES modules; TensorFlow.js comes from the project's
npm install, served locally), `app.py` its read-only Starlette routes (which `digitserve serve
--web` mounts beside /v2 too), `paths.py` what may be served beyond StaticFiles' own checks,
`server.py` uvicorn's life for `digitserve web`, `settings.py` its settings, `cli.py` the command.
"""
