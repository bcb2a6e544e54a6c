"""The INFRA agent's data services: per-sandbox PostgreSQL clones, Redis ACL users and RabbitMQ
vhosts, each recorded as SDP's by an ownership marker on the server itself (docs/infra.md).

``agent.DataAgent`` observes and runs the data steps of ``sdp_node.protocol``; one module per
server does the server's work (``postgres``, ``pgclone``, ``redisacl``, ``rabbitmq``);
``markers`` and ``hashing`` are what they share.
"""
