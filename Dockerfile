# syntax=docker/dockerfile:1
# coffer's image for Kubernetes: the operator, the CronJobs that create BackupSessions or verify
# the newest snapshot, and the backup and restore Jobs all run it. Debian 12, like the machines
# coffer's tests run on.
#   docker build -t ghcr.io/coffer-backup/coffer:0.1.0 .

FROM rust:1-bookworm AS build
# aws-lc-rs (TLS) builds its C library with cmake and clang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p coffer \
 && install -m 0755 target/release/coffer /usr/local/bin/coffer

FROM debian:12-slim
# The MariaDB/MySQL clients (mysqldump, mysql), mariabackup (physical backups and Galera SST
# preparation), garbd (Galera's arbitrator, which requests the SST a cluster backup streams)
# and the MariaDB server's binaries (mariadbd, mariadb-install-db: restore verification starts
# a throwaway server inside its pod; no service is installed or started).
# restic is not needed: coffer reads and writes restic repositories itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates mariadb-client mariadb-backup mariadb-server-core galera-arbitrator-4 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/coffer /usr/local/bin/coffer
# Non-root (nobody), with a read-only root filesystem in the pods: scratch space is /tmp,
# which the chart and the Jobs mount as an emptyDir.
ENV HOME=/tmp
USER 65534:65534
WORKDIR /tmp
ENTRYPOINT ["coffer"]
CMD ["--help"]
