"""``metaauto dashboard``: the data (:mod:`metaauto.dashboard.data`) and the Streamlit app (:mod:`metaauto.dashboard.app`)."""
