"""Officer accounts: supervisors add, disable and enable officers, change roles and reset
passwords (``api.py`` over ``store.py``), and the first start's one-time setup link
(``setup.py``)."""
