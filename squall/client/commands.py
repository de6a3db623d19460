"""The client command groups, added to the `squall` command line."""

from __future__ import annotations

import click

from squall.client import tail, trace  # noqa: F401 - they add `activation tail` and `activation trace`
from squall.client.cmd_action import action_group
from squall.client.cmd_activation import activation_group
from squall.client.cmd_deadletter import deadletter_group, feed_group
from squall.client.cmd_deploy import deploy_command, undeploy_command
from squall.client.cmd_namespace import namespace_group, register_list
from squall.client.cmd_package import package_group
from squall.client.cmd_property import property_group
from squall.client.cmd_rule import rule_group
from squall.client.cmd_trigger import trigger_group


def add_client_commands(main: click.Group) -> None:
    for group in (
        property_group,
        action_group,
        trigger_group,
        rule_group,
        package_group,
        activation_group,
        namespace_group,
        deadletter_group,
        feed_group,
    ):
        main.add_command(group)
    main.add_command(deploy_command)
    main.add_command(undeploy_command)
    register_list(main)
