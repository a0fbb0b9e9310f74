"""curriculum_search dashboard: ``streamlit run app.py [-- --studies-dir DIR --storage URL]``.

Binds where Streamlit is told to: ``python -m curriculum_search dashboard`` serves on 127.0.0.1
only. All logic lives in :mod:`curriculum_search.dashboard`.
"""

from __future__ import annotations

from curriculum_search.dashboard.pages import main

main()
