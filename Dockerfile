# syntax=docker/dockerfile:1
#
# The taskswarm peer as a container image:
#
#   docker build -t taskswarm .
#   docker run -d --name taskswarm --init --stop-timeout 60 \
#     -p 7070:7070 -p 7700:7700 \
#     -v taskswarm-data:/var/lib/taskswarm \
#     -v "$PWD/etc:/etc/taskswarm:ro" \
#     taskswarm
#
# The peer reads /etc/taskswarm/taskswarm.toml (mount it; docs/taskswarm.toml is an example). In a
# container the API must listen on 0.0.0.0 to be reachable through a published port, and the
# peer refuses to serve its API on an address other than loopback without API tokens: the config
# needs `api = "0.0.0.0:7070"` AND `tokens = "/etc/taskswarm/tokens.toml"` (a file made with
# `taskswarm token add`), or the peer stops at start with "refusing to serve the API ... without
# tokens". The libp2p default (/ip4/127.0.0.1/tcp/0) is loopback on a random port: set
# `listen = ["/ip4/0.0.0.0/tcp/7700"]` so other machines reach it, and a `swarm_key` so only
# they do. docs/operations.md, "Installing and running as a service", has the whole recipe.
#
# --init: process tasks may leave orphans, and PID 1 must reap them; taskswarm does not, so run it
# under Docker's init. --stop-timeout: on SIGTERM the peer drains for up to `stop_deadline`
# (10s by default) before it leaves; give it longer than that before Docker sends SIGKILL.

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace (cargo needs every member's manifest; .dockerignore keeps target/ and .git
# out). The cache mounts keep the registry and the build between builds on the same machine.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p taskswarm \
    && install -D -m 0755 target/release/taskswarm /out/taskswarm

# ---- run --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 taskswarm \
    && useradd --system --uid 10001 --gid taskswarm --home-dir /var/lib/taskswarm \
         --shell /usr/sbin/nologin taskswarm \
    && install -d -o taskswarm -g taskswarm -m 0750 /var/lib/taskswarm \
    && install -d -m 0755 /etc/taskswarm
COPY --from=build /out/taskswarm /usr/local/bin/taskswarm

USER taskswarm
WORKDIR /var/lib/taskswarm

# 7070: the HTTP API (the default `api` port; reachable only with api = "0.0.0.0:7070" and tokens).
# 7700: libp2p, by convention: the default listen port is 0 (random), so set
#       listen = ["/ip4/0.0.0.0/tcp/7700"] in the config for this port to mean anything.
EXPOSE 7070/tcp 7700/tcp

# The data directory: the peer's key, its store (store.redb) and peer.json. Set
# `data_dir = "/var/lib/taskswarm"` in the config (the default, "taskswarm-data", is relative to
# the working directory and would land in a subdirectory of this volume). A named volume starts
# out owned by the taskswarm user; a bind-mounted host directory must be owned by uid 10001.
VOLUME ["/var/lib/taskswarm"]

# The config, the token file and the swarm key: mount a directory here (read-only is fine; the
# peer only reads it, and reads tokens and the peer allowlist again on SIGHUP:
# `docker kill -s HUP taskswarm`). Files must be readable by uid 10001.

# SIGTERM makes the peer drain (finish what it runs, up to `stop_deadline`) and leave the swarm.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no curl or wget, and `taskswarm` has no subcommand that only asks
# a peer's GET /healthz (`taskswarm status` would need a read token once the API has tokens).
# Probe http://HOST:7070/healthz from outside instead; it answers without a token.

ENTRYPOINT ["taskswarm"]
CMD ["node", "--config", "/etc/taskswarm/taskswarm.toml"]
