"""Tenancy: tenants and tiers, API keys, the auth interceptor, rate limits and quotas, usage metering, audit."""
