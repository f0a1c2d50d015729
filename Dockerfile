# pd-observer container image: `serve`, `autoscale` and every other command of the CLI.
#
#   docker build -t pd-observer:0.1.0 .
#   docker run --rm -p 8080:8080 pd-observer:0.1.0 serve --db sqlite:////tmp/pd-observer.db
#
# Two stages: the first builds wheels of pd-observer (with its native OTLP decoder, which needs
# gcc) and of every dependency at the versions pinned in constraints.txt; the second installs
# them with no compiler and no index, and runs as an unprivileged user (uid 10001, the
# runAsUser of deploy/observer.yaml and deploy/autoscaler.yaml). The image writes nothing at
# run time except what the store needs: use PostgreSQL (store.url), or mount a volume for a
# SQLite file. tests/deploy/test_manifests.py checks this file against pyproject.toml and the
# manifests, and builds pd-observer's wheel (without its dependencies) and runs it from outside
# the checkout; `docker build` itself is not run by the tests.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY observer observer
COPY alerts alerts
COPY dashboards dashboards
COPY autoscaler autoscaler
COPY simulator simulator
COPY migrations migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels pd-observer \
 && groupadd --gid 10001 pd-observer \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pd-observer
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["pd-observer"]
CMD ["serve"]
