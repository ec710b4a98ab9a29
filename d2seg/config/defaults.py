"""The default config tree: Detectron2's keys and defaults, plus d2seg's own keys.

Keys and defaults follow Detectron2's ``config/defaults.py`` so that a Detectron2 user's YAML
works unchanged where d2seg implements the feature. Keys that d2seg adds are marked "d2seg".
A key that is not in this tree is a :class:`~d2seg.errors.ConfigError`, never silently ignored.

Every key of Detectron2's default tree is here with Detectron2's default, so a Detectron2 YAML
that leaves a key out gets what Detectron2 would give it (Detectron2's defaults describe a C4
model: ``Res5ROIHeads`` on ``res4``). The one deliberate difference is listed in
:data:`d2seg.config.unsupported.D2SEG_DEFAULTS`. Keys of features d2seg does not implement are
accepted at their default and refused by name otherwise (:mod:`d2seg.config.unsupported`).

Conventions kept from Detectron2:

* ``NUM_CLASSES`` counts foreground classes only (torchvision's count adds background inside).
* Image sizes are in pixels; ``PIXEL_MEAN``/``PIXEL_STD`` are in 0-255 pixel units, one value per
  input channel, in ``INPUT.FORMAT`` order.
* Tuple-valued keys need a trailing comma in YAML/CLI for one element: ``("balloon_train",)``.
"""

from d2seg.config.config import CfgNode as CN

_C = CN()
_C.VERSION = 2

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
# d2seg: "auto" picks "cuda" when a GPU is visible, else "cpu".
_C.MODEL.DEVICE = "auto"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# A local file: a d2seg checkpoint, a torchvision state dict, or a Detectron2 model-zoo file
# (.pkl with MSRA/Caffe2 or Detectron2 names, .pth). Nothing is ever downloaded.
_C.MODEL.WEIGHTS = ""
_C.MODEL.LOAD_PROPOSALS = False
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
# Per-channel mean/std in INPUT.FORMAT order; their length sets the number of input channels.
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# Stages to freeze: 0 = none, 1 = stem, 2 = stem + res2, ... 5 = everything.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50, 101 or 152
# Detectron2's default is the C4 trunk's res4; FPN and U-Net configs list the stages they use.
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
# ResNeXt: NUM_GROUPS 32, WIDTH_PER_GROUP 4 (or 8) with DEPTH 50/101; 1 and 64 = ResNet.
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN", "BN", "SyncBN" (BN in one process) or "GN"
# The bottleneck stride in the first 1x1 conv (True: MSRA weights, Detectron2's R-50.pkl) or in
# the 3x3 (False: torchvision's weights; d2seg's base configs set False).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# 2 replaces res5's stride by dilation (output stride 16).
_C.MODEL.RESNETS.RES5_DILATION = 1
# d2seg: 2 also dilates res4 (output stride 8, with RES5_DILATION 2), as DeepLab/FCN use.
_C.MODEL.RESNETS.RES4_DILATION = 1
# Detectron2 requires 64 for R18/R34; d2seg reads the default 256 as 64 there.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable 3x3 convs (torchvision DeformConv2d) in res2..res5; bottleneck depths only.
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1

# d2seg: torchvision classification networks as backbones. Their maps are named c<k> by
# stride 2^k (c0 = stride 1 .. c5 = stride 32), what MODEL.SEM_SEG_HEAD.IN_FEATURES lists.
_C.MODEL.VGG = CN()  # MODEL.BACKBONE.NAME build_vgg_backbone (torchvision vgg*_bn)
_C.MODEL.VGG.DEPTH = 16  # 11, 13, 16 or 19
_C.MODEL.VGG.OUT_FEATURES = ["c1", "c2", "c3", "c4", "c5"]
_C.MODEL.MOBILENET_V3 = CN()  # build_mobilenet_v3_backbone
_C.MODEL.MOBILENET_V3.SIZE = "large"  # "small" or "large"
_C.MODEL.MOBILENET_V3.WIDTH_MULT = 1.0
# True: the last stage is dilated instead of strided (c5 at stride 16, as torchvision's
# LR-ASPP / DeepLabV3 MobileNet models).
_C.MODEL.MOBILENET_V3.DILATED = False
_C.MODEL.MOBILENET_V3.OUT_FEATURES = ["c1", "c2", "c3", "c4", "c5"]
_C.MODEL.EFFICIENTNET = CN()  # build_efficientnet_backbone
_C.MODEL.EFFICIENTNET.VARIANT = "b0"  # "b0" .. "b3"
_C.MODEL.EFFICIENTNET.OUT_FEATURES = ["c1", "c2", "c3", "c4", "c5"]

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
# After the lateral and output convs: "", "GN", "BN", "SyncBN" (BN on one process), "FrozenBN".
_C.MODEL.FPN.NORM = ""
_C.MODEL.FPN.FUSE_TYPE = "sum"

_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals with a side below this many pixels are dropped before NMS.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
# One list of sizes (pixels) per feature map (or one list for all), and aspect ratios
# (height / width).
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Rotated anchors only (RotatedAnchorGenerator); DefaultAnchorGenerator ignores them.
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]
# Anchor centres at (OFFSET + i) * stride; 0.0 is torchvision's and Detectron2's default.
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# -1: anchors may cross the image border (the only choice, as torchvision).
_C.MODEL.RPN.BOUNDARY_THRESH = -1
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# "smooth_l1" (SMOOTH_L1_BETA 0 = L1) or "giou".
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Detectron2 counts top-k per feature level, as torchvision does.
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Channels of the RPN head's hidden convs; -1 = the input's channels (one conv by default).
_C.MODEL.RPN.CONV_DIMS = [-1]

_C.MODEL.ROI_HEADS = CN()
# "Res5ROIHeads" (C4), "StandardROIHeads" (FPN/DC5) or "CascadeROIHeads".
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
# Foreground classes only (background is added inside). d2seg: 0 = as many as the
# thing_classes of DATASETS.TRAIN (resolved at setup, saved in config.yaml).
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
# The ground-truth boxes join the proposals in training (torchvision always does).
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

_C.MODEL.ROI_BOX_HEAD = CN()
# "FastRCNNConvFCHead" for StandardROIHeads/CascadeROIHeads; Res5ROIHeads has no box head ("").
_C.MODEL.ROI_BOX_HEAD.NAME = ""
# "smooth_l1" (SMOOTH_L1_BETA 0 = L1) or "giou" (torchvision's generalized_box_iou_loss).
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
# "ROIAlignV2" (half-pixel aligned RoIAlign) or "ROIAlign" (the legacy, unaligned one).
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
# FastRCNNConvFCHead: NUM_CONV 3×3 convs of CONV_DIM (normalised by NORM), then NUM_FC FCs.
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
# "", "GN", "BN", "SyncBN" (BN on one process) or "FrozenBN".
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# The mask head trains on the box head's refined boxes instead of the proposals.
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
_C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50

_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
# One set of box-regression weights and one foreground IoU per cascade stage.
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
    (10.0, 10.0, 5.0, 5.0),
    (20.0, 20.0, 10.0, 10.0),
    (30.0, 30.0, 15.0, 15.0),
)
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)

_C.MODEL.ROI_MASK_HEAD = CN()
# "MaskRCNNConvUpsampleHead" or "PointRendMaskHead".
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
# "", "GN", "BN", "SyncBN" (BN on one process) or "FrozenBN".
_C.MODEL.ROI_MASK_HEAD.NORM = ""
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
# "ROIAlignV2", "ROIAlign", or "" for PointRend (its coarse head samples p2 itself).
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
# PointRendMaskHead's coarse head (Detectron2's PointRend project keys); IN_FEATURES is read
# by PointRend only: the standard head pools MODEL.ROI_HEADS.IN_FEATURES.
_C.MODEL.ROI_MASK_HEAD.FC_DIM = 1024
_C.MODEL.ROI_MASK_HEAD.NUM_FC = 2
_C.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7
_C.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
# PointRend project key: PointRendMaskHead refines its coarse masks with the point head.
_C.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = False

_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = tuple(512 for _ in range(8))
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.POINT_HEAD = CN()
_C.MODEL.POINT_HEAD.NAME = "StandardPointHead"
# d2seg: 0 = the same as MODEL.ROI_HEADS.NUM_CLASSES.
_C.MODEL.POINT_HEAD.NUM_CLASSES = 80
_C.MODEL.POINT_HEAD.FC_DIM = 256
_C.MODEL.POINT_HEAD.NUM_FC = 3
_C.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK = False
_C.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
_C.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 14 * 14
_C.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
_C.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
_C.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 5
_C.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 28 * 28
_C.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
# PointRend project key: the coarse head of PointRendSemSegHead.
_C.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = "SemSegFPNHead"

# PointRend project keys of Implicit PointRend (ROI_MASK_HEAD.NAME ImplicitPointRendMaskHead).
_C.MODEL.IMPLICIT_POINTREND = CN()
_C.MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED = True
_C.MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED = True
_C.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER = 0.00001

_C.MODEL.SEM_SEG_HEAD = CN()
# "SemSegFPNHead" (Detectron2's, on p2..p5); d2seg heads: "UNetHead" ("ResNetUNetHead", its
# old name), "DeepLabV3Head", "DeepLabV3PlusHead", "FCNHead", "LRASPPHead".
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
# Backbone features the head reads, shallowest first: p2..p5 for SemSegFPNHead; the U-Net's
# skips and its deepest input (e.g. stem, res2..res5); DeepLabV3/V3+/FCN one feature (the ASPP
# input); LR-ASPP two (low, high).
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
# Decoder channels, one per upsampling stage from res5 upward (d2seg).
_C.MODEL.SEM_SEG_HEAD.DECODER_CHANNELS = [256, 128, 64, 32, 16]
# Pixels with this label in the ground truth are ignored by the loss and by evaluation.
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
# Number of classes incl. background; 1 = binary foreground with a sigmoid; d2seg: 0 = as many
# as the stuff_classes of DATASETS.TRAIN (resolved at setup, saved in config.yaml).
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54
# d2seg: "ce", "bce", "dice" or "ce+dice"; CE_WEIGHT/DICE_WEIGHT mix the last.
_C.MODEL.SEM_SEG_HEAD.LOSS = "ce"
_C.MODEL.SEM_SEG_HEAD.CE_WEIGHT = 1.0
_C.MODEL.SEM_SEG_HEAD.DICE_WEIGHT = 1.0
# d2seg: per-class weights for the cross-entropy term; empty = uniform.
_C.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = []
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"
# d2seg: upsampling of the U-Net decoder stages: "bilinear" or "nearest" (a few % faster on CPU,
# as segmentation_models_pytorch's Unet).
_C.MODEL.SEM_SEG_HEAD.UPSAMPLE = "bilinear"
# d2seg: UNetHead's center block, two 3x3 convs on the deepest feature (smp's Unet has one for
# VGG encoders, whose stride-32 map is a bare max-pool).
_C.MODEL.SEM_SEG_HEAD.UNET_CENTER = False
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0
# SemSegFPNHead: the stride (pixels) its per-level branches upsample to before they are summed.
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
# DeepLab heads (Detectron2's DeepLab project keys): ASPP output channels and the atrous rates
# of its three 3x3 branches ([12, 24, 36] at output stride 8, [6, 12, 18] at 16).
_C.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
_C.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [12, 24, 36]
# d2seg: depthwise-separable 3x3 convs in the ASPP and the DeepLabV3+ decoder (as
# segmentation_models_pytorch's DeepLabV3Plus and the DeepLabV3+ paper).
_C.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
# DeepLabV3+: the shallower features concatenated on the way up (deepest last), each projected
# to PROJECT_CHANNELS by a 1x1 conv, then two 3x3 convs of CONVS_DIM channels.
_C.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
_C.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
# SemSegFPNHead's conv channels too (Detectron2's default; its DeepLab configs use 256).
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
# d2seg: LRASPPHead's inner channels (torchvision's inter_channels).
_C.MODEL.SEM_SEG_HEAD.LRASPP_CHANNELS = 128

_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0
_C.MODEL.PANOPTIC_FPN.COMBINE = CN()
_C.MODEL.PANOPTIC_FPN.COMBINE.ENABLED = True
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5

_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
_C.MODEL.RETINANET.NUM_CONVS = 4
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
_C.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
_C.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RETINANET.NORM = ""

# ---------------------------------------------------------------------------- #
# Input
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
# Shortest-edge sizes (pixels) sampled during training; "choice" or "range".
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
# 0 disables resizing at test time.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# "horizontal", "vertical" or "none".
_C.INPUT.RANDOM_FLIP = "horizontal"
# "BGR", "RGB", "L" (grayscale), or "N" (as many channels as MODEL.PIXEL_MEAN has).
_C.INPUT.FORMAT = "BGR"
_C.INPUT.MASK_FORMAT = "polygon"  # "polygon" or "bitmask"
_C.INPUT.CROP = CN({"ENABLED": False})
# "relative_range", "relative", "absolute" or "absolute_range".
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# Detectron2's semantic recipe (DeepLab/PointRend): < 1.0 redraws a crop (after the resize)
# until no class covers this share of it; COLOR_AUG_SSD: SSD's photometric distortions.
_C.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
_C.INPUT.COLOR_AUG_SSD = False
# d2seg: brightness/contrast/saturation jitter strength, 0 = off.
_C.INPUT.COLOR_JITTER = 0.0

# ---------------------------------------------------------------------------- #
# Datasets and data loading
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
# Registered names or paths to COCO json files (auto-registered, images beside the json).
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.PROPOSAL_FILES_TEST = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000
# d2seg: the class names of DATASETS.TRAIN, written by the trainer's setup (empty = not known
# yet), so that config.yaml alone names a run's predictions. Instance classes index
# THING_CLASSES; semantic labels index STUFF_CLASSES (0 is usually "background").
_C.DATASETS.THING_CLASSES = ()
_C.DATASETS.STUFF_CLASSES = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
# "TrainingSampler" or "RepeatFactorTrainingSampler".
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.REPEAT_SQRT = True
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
# d2seg: "SGD" or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# "WarmupMultiStepLR" or "WarmupCosineLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
_C.SOLVER.BASE_LR_END = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (30000,)
# WarmupStepWithFixedGammaLR only.
_C.SOLVER.NUM_DECAYS = 3
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.RESCALE_INTERVAL = False
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# d2seg: keep only the newest N periodic checkpoints (0 = keep all); model_best.pth and
# model_final.pth are kept besides them.
_C.SOLVER.CHECKPOINT_KEEP = 3
# Images per batch across all GPUs.
_C.SOLVER.IMS_PER_BATCH = 16
# Detectron2's automatic LR/batch scaling when the world size differs (0 = off).
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value" or "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN({"ENABLED": False})
# d2seg: "float16" or "bfloat16" (the only choice on CPU).
_C.SOLVER.AMP.DTYPE = "float16"
# d2seg: stop when METRIC has not improved for PATIENCE evaluations (0 = never). METRIC also
# selects model_best.pth; "" = the model's main metric (segm/AP, bbox/AP, sem_seg/mIoU or
# panoptic_seg/PQ), or e.g. "validation_loss" with MODE "min".
_C.SOLVER.EARLY_STOP = CN()
_C.SOLVER.EARLY_STOP.PATIENCE = 0
_C.SOLVER.EARLY_STOP.METRIC = ""
_C.SOLVER.EARLY_STOP.MODE = "max"  # "max" or "min"

# ---------------------------------------------------------------------------- #
# Test
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
# Detectron2's check after --eval-only: [["segm", "AP", 38.5, 0.2], ...] = task, metric,
# expected value, absolute tolerance. A miss (or a missing / non-finite metric) exits 1.
_C.TEST.EXPECTED_RESULTS = []
# Evaluate every EVAL_PERIOD iterations during training (0 = only at the end).
_C.TEST.EVAL_PERIOD = 0
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.AUG = CN({"ENABLED": False})
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True
# Recompute BatchNorm statistics from NUM_ITER training batches every EVAL_PERIOD and at the end.
_C.TEST.PRECISE_BN = CN({"ENABLED": False})
_C.TEST.PRECISE_BN.NUM_ITER = 200
# d2seg: "pycocotools" or "faster" (faster-coco-eval, identical numbers).
_C.TEST.COCO_BACKEND = "pycocotools"
# d2seg: SemSegEvaluator scores a class predicted but absent from the ground truth IoU 0 and
# counts it in mIoU (False: NaN and left out, Detectron2's rule).
_C.TEST.SEM_SEG_STRICT_IOU = False
# d2seg: also compute the training losses on DATASETS.TEST at every evaluation.
_C.TEST.VALIDATION_LOSS = False

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"
# >= 0: deterministic seed (the same result twice on CPU); < 0: random.
_C.SEED = -1
_C.CUDNN_BENCHMARK = False
# "" = PyTorch's default; "highest", "high" or "medium" (torch.set_float32_matmul_precision).
_C.FLOAT32_PRECISION = ""
_C.VIS_PERIOD = 0
# Detectron2's placeholder for global hacks; no effect.
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0
