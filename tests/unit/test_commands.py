"""Management commands and token lifecycle, as an operator runs them."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat import tokens

pytestmark = pytest.mark.django_db(transaction=True)


def test_issue_token_prints_only_the_token(alice):
    out, err = StringIO(), StringIO()
    call_command("issue_token", "alice", "--ttl-hours", "3", "--name", "ci", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert len(token) >= 40 and "\n" not in token
    assert tokens.verify(token) == alice
    assert token[:8] in err.getvalue() and token not in err.getvalue()


def test_issue_token_unknown_user():
    with pytest.raises(CommandError, match="no user"):
        call_command("issue_token", "nobody", stdout=StringIO(), stderr=StringIO())


def test_revoke_token_by_prefix(alice):
    out = StringIO()
    call_command("issue_token", "alice", stdout=out, stderr=StringIO())
    token = out.getvalue().strip()
    msg = StringIO()
    call_command("revoke_token", token[:8], stdout=msg)
    assert "revoked 1" in msg.getvalue()
    with pytest.raises(tokens.TokenError):
        tokens.verify(token)
    with pytest.raises(CommandError):
        call_command("revoke_token", token[:8], stdout=StringIO())
