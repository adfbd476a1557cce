"""Features declared as data: the declarations (`declarations`), the offline SQL generated
from them (`offline`: ``features.card_features``) and the per-card online state (`online_state`)."""
