# django-channels-stack: the ops entry points. Each target is a thin call into
# scripts/ so the logic lives in one place and can be run without make.
SHELL := /bin/bash
.DEFAULT_GOAL := help
WS ?= 2
export PATH := $(CURDIR)/.venv/bin:$(PATH)

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

## --- the two commands -----------------------------------------------------
up: env ## Build and start the stack in Docker, wait until healthy, print the URL
	scripts/compose up

test: deps ## Run every test suite (unit, native integration, browser, compose, k8s)
	scripts/test all

## --- settings ------------------------------------------------------------
env: ## Create .env from .env.example, filling empty secrets with random values
	scripts/env

certs: ## Local CA + localhost certificate in TLS_CERT_DIR, for TLS_MODE=files on a laptop
	scripts/certs

## --- compose operations --------------------------------------------------
build: env ## Build the app image
	scripts/compose build
up-monitoring: env ## make up, plus Prometheus and the exporters (compose profile monitoring)
	COMPOSE_PROFILES=monitoring scripts/compose up
deploy: ## Put a new build into service: migrate, then web and ws roll (no moment without a replica)
	scripts/compose deploy
down: ## Stop the compose stack: ws drains first (close 1012), keeps the data
	scripts/compose down
reset: ## Stop and DELETE the data volumes (asks; CONFIRM=yes skips, RESET_ENV=yes also deletes .env)
	CONFIRM=$(CONFIRM) RESET_ENV=$(RESET_ENV) scripts/compose reset
logs: ## Follow compose logs
	scripts/compose logs
ps: ## Show compose services
	scripts/compose ps
scale: ## Scale ws replicas: make scale WS=4
	scripts/compose scale $(WS)
migrate: ## Run migrations (compose)
	scripts/compose migrate
createsuperuser: ## Create a Django superuser (compose): asks, or DJANGO_SUPERUSER_USERNAME/EMAIL/PASSWORD
	scripts/compose createsuperuser
shell: ## Django shell inside the web container
	scripts/compose shell
backup: ## pg_dump the database (compose) to BACKUP_DIR/chat-<UTC time>.dump
	scripts/compose backup
restore: ## Replace the database with a backup: make restore FILE=backups/chat-....dump (asks; CONFIRM=yes skips)
	CONFIRM=$(CONFIRM) scripts/compose restore "$(FILE)"

## --- native stack (no Docker) --------------------------------------------
deps: ## Install Debian packages and the Python venv
	scripts/deps
local: deps ## Start Postgres, Redis, gunicorn, WS_WORKERS daphne and nginx on loopback
	scripts/local up
local-monitoring: deps ## make local, plus the exporters and Prometheus (alert rules of monitoring/)
	scripts/local up db redis migrate web ws nginx monitoring
local-down: ## Stop exactly what `make local` started
	scripts/local down

## --- kubernetes ----------------------------------------------------------
k8s-render: ## Render every overlay with kubectl kustomize
	scripts/k8s render
k8s-validate: ## Render and validate every overlay offline (schemas + policy tests)
	scripts/k8s validate
k8s-apply: ## kubectl apply -k k8s/overlays/$(K8S_ENV) (default dev)
	scripts/k8s apply $(or $(K8S_ENV),dev)

## --- quality -------------------------------------------------------------
test-faults: deps ## Fault suite: kill/SIGTERM workers, restart Redis/Postgres, Sentinel failover, shard restart, reload nginx
	scripts/test-faults
soak: deps ## Hold N sockets for T minutes and report RSS growth per tier
	scripts/soak
bench: deps ## WebSocket fan-out benchmark (docs/benchmarks.md)
	scripts/bench
bench-tls: deps ## WebSocket connects/s through nginx, wss:// vs ws:// (bench/tls_connects.py)
	.venv/bin/python -m bench.tls_connects

.PHONY: help up up-monitoring test env build deploy down reset logs ps scale migrate createsuperuser shell backup restore certs deps local local-monitoring local-down k8s-render k8s-validate k8s-apply test-faults soak bench bench-tls
