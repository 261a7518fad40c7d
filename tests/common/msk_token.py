"""AWS's own MSK IAM signer (PyPI aws-msk-iam-sasl-signer-python) as the oracle for
csv2kafka's AWS_MSK_IAM tokens: signs with the given credentials, region and Unix time
and prints the token and its expiry (milliseconds), one per line.

  python3 msk_token.py ACCESS_KEY SECRET_KEY SESSION_TOKEN|- REGION UNIX_TIME
"""
import datetime
import sys
from unittest import mock

import botocore.auth
from botocore.credentials import CredentialProvider, Credentials
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

access, secret, token, region, epoch = sys.argv[1:6]
at = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)


class Fixed(CredentialProvider):
    METHOD = "fixed"

    def load(self):
        return Credentials(access, secret, None if token == "-" else token)


with mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: at):
    signed, expires_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
        region, Fixed())
print(signed)
print(expires_ms)
