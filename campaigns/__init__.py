"""Business domain: input contracts, synthetic world, segments, eligibility, allocation, arms, target
lists, export, persistence, attribution and A/B analysis."""
