"""Pure ranking library: event weighting, id maps, interaction matrices, features, models,
segment ranking and offline evaluation. Knows nothing of campaigns, databases or schedulers."""
