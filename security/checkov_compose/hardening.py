"""Compose hardening rules that checkov has no built-in policy for.

checkov's `yaml` framework hands every entry of `services:` to these checks
(YAML merge keys such as `<<: *app` are already resolved), so the rules the
issue asks of every container are enforced on the file operators really run.
"""
import re
from abc import abstractmethod

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.yaml_doc.base_yaml_check import BaseYamlCheck
from checkov.yaml_doc.enums import BlockType

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.I)
# `${VAR}`, `${VAR:?msg}`, `$$VAR`: the value comes from outside the file.
INTERPOLATED = re.compile(r"^\s*\$\{?\$?[A-Za-z_]")
DATA_IMAGES = ("postgres", "redis")
PROJECT_IMAGE = "django-channels-stack"


def _service_check(cls):
    """Register a scan function as a check over every compose service."""
    return cls()


class _ComposeServiceCheck(BaseYamlCheck):
    ID = NAME = ""

    def __init__(self):
        super().__init__(name=self.NAME, id=self.ID,
                         categories=[CheckCategories.GENERAL_SECURITY],
                         supported_entities=["services"], block_type=BlockType.ARRAY)

    def scan_entity_conf(self, conf, entity_type):
        if not isinstance(conf, dict):
            return CheckResult.UNKNOWN
        return CheckResult.PASSED if self.ok(conf) else CheckResult.FAILED

    @abstractmethod
    def ok(self, conf):
        """True when the service `conf` follows the rule (each check defines it)."""


@_service_check
class CapDropAll(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C1", "Compose service drops every Linux capability (cap_drop: [ALL])"

    def ok(self, conf):
        return "ALL" in [str(c).upper() for c in conf.get("cap_drop") or []]


@_service_check
class NoNewPrivileges(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C2", "Compose service sets security_opt no-new-privileges:true"

    def ok(self, conf):
        opts = [str(o).replace("=", ":") for o in conf.get("security_opt") or []]
        return any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts)


@_service_check
class ReadOnlyRoot(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C3", "Compose service runs with a read-only root filesystem"

    def ok(self, conf):
        return conf.get("read_only") is True


@_service_check
class NonRootUser(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C4", "Compose service runs as a non-root user (user: or the project image's USER)"

    def ok(self, conf):
        user = str(conf.get("user", "")).split(":")[0].strip()
        if user:
            return user not in ("0", "root")
        # The project image (services/Dockerfile), whose final non-root USER
        # checkov's CKV_DOCKER_8 and hadolint DL3002 enforce.
        return "build" in conf or str(conf.get("image", "")).startswith(PROJECT_IMAGE)


@_service_check
class NotPrivileged(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C5", "Compose service is not privileged and shares no host namespace"

    def ok(self, conf):
        return (conf.get("privileged") is not True
                and str(conf.get("network_mode", "")) != "host"
                and str(conf.get("pid", "")) != "host"
                and str(conf.get("ipc", "")) != "host")


@_service_check
class DataServicesUnpublished(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C6", "Postgres and Redis publish no host port"

    def ok(self, conf):
        image = str(conf.get("image", "")).split("/")[-1]
        return not (image.startswith(DATA_IMAGES) and conf.get("ports"))


@_service_check
class PublishedPortsBindExplicitly(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C7", "Every published port names its host address (no implicit 0.0.0.0)"

    def ok(self, conf):
        for port in conf.get("ports") or []:
            if isinstance(port, dict):
                if not port.get("host_ip"):
                    return False
            elif str(port).count(":") < 2:
                return False
        return True


@_service_check
class NoLiteralSecrets(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C8", "Secrets in environment come from interpolation, never literals"

    def ok(self, conf):
        env = conf.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in env)
        for key, value in env.items():
            if str(key).startswith("__") or not SECRET_NAME.search(str(key)):
                continue
            if value not in (None, "") and not INTERPOLATED.match(str(value)):
                return False
        return True


@_service_check
class MemoryLimited(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C9", "Long-running compose service has a memory limit"

    def ok(self, conf):
        if str(conf.get("restart", "")) == "no":
            return True
        limits = ((conf.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        return bool(limits.get("memory") or conf.get("mem_limit"))


@_service_check
class HasHealthcheck(_ComposeServiceCheck):
    ID, NAME = "CKV_CHAT_C10", "Long-running compose service has a healthcheck"

    def ok(self, conf):
        if str(conf.get("restart", "")) == "no":
            return True
        hc = conf.get("healthcheck") or {}
        return bool(hc) and hc.get("disable") is not True
