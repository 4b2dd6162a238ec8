# soma-sync node image: the soma-sync CLI on Node 24 (which runs the TypeScript sources as they are),
# with classic-level's native LevelDB binding. docker-compose.yml runs the testnet from it.
#
#   docker build -t soma-sync .
#   docker run --rm -p 7700:7700 -p 127.0.0.1:7780:7780 -v soma-data:/data soma-sync start --entrypoints ...
#
# Options are SOMA_* environment variables or flags (soma-sync <command> --help); data lives in /data.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build stage: production dependencies and classic-level's native binding ---------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# .docker-ca.pem (optional, never committed): an extra CA bundle for npm behind a TLS-intercepting
# proxy; scripts/testnet-docker puts the host's there for the build and removes it afterwards
COPY package.json package-lock.json .docker-ca.pe[m] ./
RUN if [ -f .docker-ca.pem ]; then npm config set cafile /app/.docker-ca.pem; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild classic-level \
 && rm -f .docker-ca.pem \
 && node -e "import('classic-level').then(async ({ ClassicLevel }) => { const db = new ClassicLevel('/tmp/probe'); await db.open(); await db.close() })" \
 && rm -rf /tmp/probe

# ---- runtime stage -----------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    SOMA_DATA_DIR=/data \
    SOMA_LISTEN=/ip4/0.0.0.0/tcp/7700 \
    SOMA_STATUS_HOST=0.0.0.0
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY protocols ./protocols
COPY bin ./bin
COPY src ./src
COPY testnet ./testnet
RUN mkdir -p /data && chown node:node /data
USER node
# libp2p, then status (/status, /health) and Prometheus metrics (/metrics)
EXPOSE 7700 7780
ENTRYPOINT ["node", "/app/src/cli/main.ts"]
CMD ["help"]
