"""Everything that turns logs into ranker inputs: CF, behaviour and text features, candidates,
and the ranking frame shared by training, batch ranking and serving."""
