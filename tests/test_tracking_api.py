"""The tracking service over gRPC, fed by real rep copies: views become tags with evidence, leads and activity."""

from __future__ import annotations

import grpc
import pytest

from services.protos.contentops.tracking.v1 import tracking_pb2 as pb

from .tracking_harness import Track

BODY = "5岁小姑娘的创造力启蒙，其实只需要三步：每天15分钟自由涂鸦，一起读一本图画书，周末一次户外观察。" * 4


def code_of(call, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code()  # type: ignore[attr-defined]


def test_a_long_read_becomes_a_tag_with_evidence_and_a_lead(track: Track) -> None:
    topic = track.topic("early-education", "早教")
    post = track.publish("5岁小姑娘的创造力启蒙三步走", BODY, [topic])
    rep, md = track.rep("王老师")
    token = track.share_token(post, rep, md)
    link = track.stub.CreateContactLink(pb.CreateContactLinkRequest(parent=rep.name, share_token=token,
                                                                    contact_display_name="优优妈妈"), metadata=md)
    first = track.read(link.share_token, 130)
    track.read(link.share_token, 70, visitor=first.visitor_id)  # the same visitor: a second visit, later merged
    track.settle()
    profile = track.stub.GetContactProfile(pb.GetContactProfileRequest(name=link.contact.name), metadata=md)
    assert profile.contact.display_name == "优优妈妈" and profile.contact.named
    assert [t.label for t in profile.tags] == ["早教·关注"] or [t.label for t in profile.tags] == ["早教·高"]
    evidence = profile.tags[0].evidence[0]
    assert evidence.post_title == "5岁小姑娘的创造力启蒙三步走" and evidence.engaged_seconds >= 60
    assert "分钟" in evidence.description and profile.timeline
    leads = track.stub.ListLeads(pb.ListLeadsRequest(parent=rep.name), metadata=md)
    assert [lead.contact.name for lead in leads.leads] == [link.contact.name] and leads.leads[0].contact.named
    assert "早教" in leads.leads[0].talking_point and leads.leads[0].reason
