"""Serving: online features for new transactions and the champion that scores them."""
