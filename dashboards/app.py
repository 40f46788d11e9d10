"""Entry for ``streamlit run dashboards/app.py``; the app itself ships in the package
(:mod:`metaauto.dashboard.app`) so ``metaauto dashboard`` works from an installed wheel too."""

import runpy

runpy.run_module("metaauto.dashboard.app", run_name="__main__")
