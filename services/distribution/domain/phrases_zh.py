"""Curated Chinese marketing phrases: each group's members read naturally in one another's place.

Hand-picked, not embedding neighbours (which return related words, not synonyms).
Rules for adding a group:
- every member can replace every other in ordinary sales copy without changing what is promised;
- no digits or numerals (numbers are protected content), no prices, dates or product names;
- a member must not be a common substring of unrelated words (so no one-character members,
  and nothing like 十分 that also occurs in 十分钟);
- no member is listed in two groups.
"""

from __future__ import annotations

GROUPS: tuple[tuple[str, ...], ...] = (
    ("限时优惠", "限时特惠", "限时折扣"),
    ("欢迎咨询", "欢迎私信", "欢迎来问"),
    ("名额有限", "名额不多", "席位有限"),
    ("先到先得", "先到先得哦", "手快有，手慢无"),
    ("快来报名", "赶快报名", "抓紧报名", "马上报名"),
    ("立即购买", "马上下单", "立即下单"),
    ("不要错过", "千万别错过", "别错过"),
    ("不容错过", "不可错过"),
    ("欢迎到店", "欢迎来店", "欢迎光临"),
    ("超划算", "很划算", "特别划算"),
    ("详情请咨询", "详情请私信", "具体请咨询"),
    ("详情：", "详情请看：", "了解更多："),
    ("报名电话：", "报名热线：", "咨询电话："),
    ("感谢支持", "谢谢支持", "感谢大家的支持"),
    ("新品上市", "新品上架", "新品到店"),
    ("火热报名中", "报名进行中", "正在报名中"),
    ("数量有限", "库存有限", "数量不多"),
    ("亲爱的朋友们", "各位朋友", "朋友们"),
    ("大家好", "哈喽大家好", "各位好"),
    ("来啦", "来咯", "来了"),
    ("报名送", "报名即送", "报名就送"),
    ("每天", "每日"),
    ("快来看看", "快来瞧瞧", "来看看吧"),
    ("性价比超高", "性价比很高", "性价比特别高"),
    ("好评如潮", "口碑很好", "广受好评"),
    ("心动不如行动", "赶紧行动吧", "快行动起来吧"),
    ("包邮", "免运费"),
    ("欢迎转发", "欢迎分享"),
    ("有需要的朋友", "需要的朋友", "有需要的小伙伴"),
    ("点击链接", "戳链接", "点链接"),
    ("私信我", "私聊我", "给我留言"),
    ("期待您的光临", "期待与您相见", "恭候您的光临"),
    ("期待你的到来", "期待你的光临"),
    ("诚邀", "诚挚邀请", "真诚邀请"),
    ("好物推荐", "好物分享", "推荐好物"),
    ("强烈推荐", "真心推荐", "诚意推荐"),
    ("上新啦", "新品来啦", "上新了"),
    ("热销中", "火热销售中", "正在热卖"),
    ("品质保证", "品质有保障", "质量有保证"),
    ("售完即止", "售完为止", "卖完即止"),
    ("更多详情", "更多信息", "更多内容"),
    ("欢迎预约", "欢迎提前预约", "可提前预约"),
    ("立即预约", "马上预约", "赶快预约"),
    ("温馨提示", "友情提示", "小提示"),
    ("本周末", "这个周末"),
    ("还在等什么", "还等什么", "还犹豫什么"),
    ("一起来", "一起过来"),
)
