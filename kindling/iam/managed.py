"""AWS managed policies that exist in every account (arn:aws:iam::aws:policy/...), with AWS's documents.

The Lambda and administrator policies carry AWS's published documents (default versions as of 2025).
ReadOnlyAccess in AWS lists read actions of every AWS service (well over 100 KB); here it carries its
statements for the services Kindling serves (Lambda, CloudWatch Logs, IAM, STS), which is all it can grant.
"""

from __future__ import annotations

import json
from typing import Any

_ALL = "*"


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, indent=4)


# name -> (path, description, document)
MANAGED: dict[str, tuple[str, str, str]] = {
    "AWSLambdaBasicExecutionRole": ("/service-role/", "Provides write permissions to CloudWatch Logs.", _doc(
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": _ALL})),
    "AWSLambdaRole": ("/service-role/", "Default policy for AWS Lambda service role.", _doc(
        {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": ["*"]})),
    "AWSLambdaVPCAccessExecutionRole": ("/service-role/", "Provides minimum permissions for a Lambda function to "
                                        "execute while accessing a resource within a VPC", _doc(
        {"Sid": "AWSLambdaVPCAccessExecutionPermissions", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
         "Resource": "*"})),
    "AWSLambda_FullAccess": ("/", "Grants full access to AWS Lambda service, AWS Lambda console features, and "
                             "other related AWS services.", _doc(
        {"Effect": "Allow", "Action": [
            "cloudformation:DescribeStacks", "cloudformation:ListStackResources", "cloudwatch:ListMetrics",
            "cloudwatch:GetMetricData", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
            "kms:ListAliases", "iam:GetPolicy", "iam:GetPolicyVersion", "iam:GetRole", "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies", "iam:ListRolePolicies", "iam:ListRoles", "lambda:*",
            "logs:DescribeLogGroups", "states:DescribeStateMachine", "states:ListStateMachines", "tag:GetResources",
            "xray:GetTraceSummaries", "xray:BatchGetTraces"], "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}},
        {"Effect": "Allow", "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents"],
         "Resource": "arn:aws:logs:*:*:log-group:/aws/lambda/*"})),
    "AWSLambda_ReadOnlyAccess": ("/", "Grants read-only access to AWS Lambda service, AWS Lambda console features, "
                                 "and other related AWS services.", _doc(
        {"Effect": "Allow", "Action": [
            "cloudformation:DescribeStacks", "cloudformation:ListStacks", "cloudformation:ListStackResources",
            "cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets", "ec2:DescribeVpcs", "kms:ListAliases", "iam:GetPolicy", "iam:GetPolicyVersion",
            "iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies",
            "iam:ListRoles", "logs:DescribeLogGroups", "lambda:Get*", "lambda:List*", "states:DescribeStateMachine",
            "states:ListStateMachines", "tag:GetResources", "xray:GetTraceSummaries", "xray:BatchGetTraces"],
         "Resource": "*"},
        {"Effect": "Allow", "Action": [
            "logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents", "logs:StartQuery",
            "logs:StopQuery", "logs:DescribeQueries", "logs:GetLogGroupFields", "logs:GetLogRecord",
            "logs:GetQueryResults", "logs:StartLiveTail", "logs:StopLiveTail"],
         "Resource": "arn:aws:logs:*:*:log-group:/aws/lambda/*"})),
    "AdministratorAccess": ("/", "Provides full access to AWS services and resources.", _doc(
        {"Effect": "Allow", "Action": "*", "Resource": "*"})),
    "ReadOnlyAccess": ("/", "Provides read-only access to AWS services and resources.", _doc(
        {"Sid": "ReadOnlyActions", "Effect": "Allow", "Action": [
            "iam:Generate*", "iam:Get*", "iam:List*", "iam:Simulate*", "lambda:Get*", "lambda:List*",
            "logs:Describe*", "logs:FilterLogEvents", "logs:Get*", "logs:ListTagsForResource",
            "logs:ListTagsLogGroup", "logs:StartQuery", "logs:StopQuery", "logs:TestMetricFilter",
            "sts:GetAccessKeyInfo", "sts:GetCallerIdentity", "sts:GetSessionToken"],
         "Resource": "*"})),
}
MANAGED_CREATED = "2015-02-06T18:39:46Z"


def arn(name: str) -> str:
    path = MANAGED[name][0]
    return f"arn:aws:iam::aws:policy{path}{name}"


BY_ARN: dict[str, str] = {arn(name): name for name in MANAGED}
