"""``fleet serve``: what the pipeline knows, for people and programs.

A stateless ASGI application (Litestar): every node reads Redis (live
positions, ETAs, boards, the live channels) and PostgreSQL (history,
events), so several run behind a load balancer. See ``fleet_serve.app``.
"""
