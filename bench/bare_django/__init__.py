"""The comparison server of bench/serving.py: a bare Django view doing nothing but the model call (issue 18, item 7).

One view parses the JSON body, calls the loaded estimator's predict_proba and predict on its rows and answers JSON,
as a plain Django deployment would serve it (gunicorn's gthread worker, no database, no middleware, no auth, no
log). The estimator is the demo's own artifact, loaded at import from BARE_MODEL_PATH (a skops file).
"""
