"""The pieces of ``python -m scripts.benchmark``: measuring (``timing``), what is measured
(``fixtures``), the sections (``sections``, ``released``) and the report (``report``)."""
