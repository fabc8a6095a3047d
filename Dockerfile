# insmon's image, for the compose stack (docker-compose.yml). The install step is the
# README quick start's own: `make run` is `make .venv/.runtime`, then `insmon run`.
FROM python:3.11-slim-bookworm

# make: the install step; libcap2-bin: setcap; gammu-smsd: gammu-smsd-inject, how the
# pager hands an SMS to the modem's daemon. (For WireGuard handshake ages add
# wireguard-tools and CAP_NET_ADMIN: `wg show` needs both.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends make libcap2-bin gammu-smsd \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/insmon
COPY Makefile pyproject.toml README.md ./
COPY monitor/ monitor/
COPY probes/ probes/
COPY exporters/ exporters/
COPY ops/ ops/
COPY alert_rules/ alert_rules/
COPY pager/ pager/
COPY vocabulary/ vocabulary/
RUN make .venv/.runtime

# ICMP (ping and vpn checks) as a user: CAP_NET_RAW on the interpreter and nothing else;
# the compose file keeps that one capability in the container's bounding set.
RUN setcap cap_net_raw+ep "$(readlink -f .venv/bin/python)" \
    && useradd --system --no-create-home --shell /usr/sbin/nologin insmon \
    && install -d -o insmon /var/lib/insmon /var/lib/insmon-pager
USER insmon

EXPOSE 9829 9095
ENTRYPOINT ["/opt/insmon/.venv/bin/insmon"]
CMD ["run"]
