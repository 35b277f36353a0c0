"""Tiny versions of mmdet3d's own PointPillars, CenterPoint and PV-RCNN configs for fast CPU tests."""
import numpy as np

from dm3d_exp.adapters.detector import load_config
from dm3d_exp.adapters.layers import he_normal_ as he_init  # noqa: F401  (re-exported for the tests)

RANGE = [0.0, -6.4, -3.0, 12.8, 6.4, 1.0]


def tiny_pointpillars():
    cfg = load_config("mmdet3d::pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py")
    m = cfg.model
    vs = [0.4, 0.4, 4.0]
    m.data_preprocessor.voxel_layer.update(point_cloud_range=RANGE, voxel_size=vs, max_voxels=(2000, 2000))
    m.voxel_encoder.update(feat_channels=[8], voxel_size=vs, point_cloud_range=RANGE)
    m.middle_encoder.update(in_channels=8, output_shape=[32, 32])
    m.backbone.update(in_channels=8, layer_nums=[1, 1, 1], out_channels=[8, 8, 16])
    m.neck.update(in_channels=[8, 8, 16], out_channels=[8, 8, 8])
    m.bbox_head.update(in_channels=24, feat_channels=24)
    m.bbox_head.anchor_generator.ranges = [RANGE[:2] + [-0.6] + RANGE[3:5] + [-0.6]] * 2 + [RANGE[:2] + [-1.78] + RANGE[3:5] + [-1.78]]
    return cfg


def tiny_centerpoint():
    cfg = load_config("mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    m = cfg.model
    vs = [0.2, 0.2, 0.2]
    rng = [-6.4, -6.4, -5.0, 6.4, 6.4, 3.0]
    m.data_preprocessor.voxel_layer.update(point_cloud_range=rng, voxel_size=vs, max_voxels=(4000, 4000))
    m.pts_voxel_encoder.update(num_features=4)
    m.pts_middle_encoder.update(in_channels=4, base_channels=4, sparse_shape=[41, 64, 64], output_channels=16,
                                encoder_channels=((4, 8), (8, 8), (8, 16), (16,)),
                                encoder_paddings=((0, 1), (0, 1), (0, [0, 1, 1]), (0,)))
    m.pts_backbone.update(in_channels=32, out_channels=[16, 16], layer_nums=[1, 1])
    m.pts_neck.update(in_channels=[16, 16], out_channels=[16, 16])
    m.pts_bbox_head.update(in_channels=32, share_conv_channel=8,
                           tasks=[dict(num_class=1, class_names=["car"]),
                                  dict(num_class=2, class_names=["pedestrian", "bicycle"])])
    m.pts_bbox_head.bbox_coder.update(voxel_size=vs[:2], post_center_range=[-10, -10, -10, 10, 10, 10])
    m.test_cfg.pts.update(voxel_size=vs[:2], min_radius=[4, 0.85], post_center_limit_range=[-10, -10, -10, 10, 10, 10])
    m.train_cfg.pts.update(voxel_size=vs, grid_size=[64, 64, 40])
    return cfg


def tiny_pv_rcnn():
    """PV-RCNN over RANGE: 0.1 m voxels (sparse grid 41 x 128 x 128), mmdet3d's sparse encoder, VSA and RoI
    head unchanged, 128 keypoints, a 1+1-layer 16/32-channel BEV backbone and at most 16 proposals."""
    cfg = load_config("mmdet3d::pv_rcnn/pv_rcnn_8xb2-80e_kitti-3d-3class.py")
    m = cfg.model
    vs = [0.1, 0.1, 0.1]
    m.data_preprocessor.voxel_layer.update(point_cloud_range=RANGE, voxel_size=vs, max_voxels=(4000, 4000))
    m.middle_encoder.update(sparse_shape=[41, 128, 128])
    m.points_encoder.update(num_keypoints=128, voxel_size=vs, point_cloud_range=RANGE)
    m.backbone.update(layer_nums=[1, 1], out_channels=[16, 32])
    m.neck.update(in_channels=[16, 32], out_channels=[16, 16])
    m.rpn_head.update(in_channels=32, feat_channels=32)
    m.rpn_head.anchor_generator.ranges = [RANGE[:2] + [-0.6] + RANGE[3:5] + [-0.6]] * 2 + [RANGE[:2] + [-1.78] + RANGE[3:5] + [-1.78]]
    m.test_cfg.rpn.update(nms_pre=200, nms_post=16, max_num=16)
    return cfg


def random_points(seed, n=1500, rng_box=(0.5, -6.0, -2.5, 12.0, 6.0, 0.5)):
    g = np.random.default_rng(seed)
    lo, hi = np.array(rng_box[:3]), np.array(rng_box[3:])
    xyz = lo + (hi - lo) * g.random((n, 3))
    return np.concatenate([xyz, g.random((n, 1))], 1).astype(np.float32)


def tiny_ssn():
    """mmdet3d's SSN (MVXFasterRCNN + ShapeAwareHead) over a 12.8 m square: 0.4 m pillars, 8-16 channels,
    two shape groups (small: pedestrian + bicycle at stride 1; large: car at stride 2), plain BN."""
    cfg = load_config("mmdet3d::ssn/ssn_hv_secfpn_sbn-all_16xb2-2x_nus-3d.py")
    m = cfg.model
    rng, vs = [-6.4, -6.4, -5.0, 6.4, 6.4, 3.0], [0.4, 0.4, 8.0]
    bn1, bn2 = dict(type="BN1d", eps=1e-3, momentum=0.01), dict(type="BN2d", eps=1e-3, momentum=0.01)
    m.data_preprocessor.voxel_layer.update(point_cloud_range=rng, voxel_size=vs, max_voxels=(2000, 2000))
    m.pts_voxel_encoder.update(feat_channels=[8], voxel_size=vs, point_cloud_range=rng, norm_cfg=bn1)
    m.pts_middle_encoder.update(in_channels=8, output_shape=[32, 32])
    m.pts_backbone.update(in_channels=8, layer_nums=[1, 1, 1], out_channels=[8, 8, 16], norm_cfg=bn2)
    m.pts_neck.update(in_channels=[8, 8, 16], out_channels=[8, 8, 8], norm_cfg=bn2)
    sizes = {"pedestrian": [0.73, 0.67, 1.77], "bicycle": [1.68, 0.60, 1.27], "car": [4.61, 1.95, 1.72]}
    classes = ["pedestrian", "bicycle", "car"]
    head = m.pts_bbox_head
    head.update(num_classes=3, in_channels=24, feat_channels=24,
                tasks=[dict(num_class=2, class_names=classes[:2], shared_conv_channels=(8,),
                            shared_conv_strides=(1,), norm_cfg=bn2),
                       dict(num_class=1, class_names=classes[2:], shared_conv_channels=(8, 8),
                            shared_conv_strides=(2, 1), norm_cfg=bn2)])
    head.anchor_generator.update(ranges=[rng[:2] + [-1.7] + rng[3:5] + [-1.7]] * 3, sizes=[sizes[c] for c in classes])
    m.train_cfg.pts.assigner = m.train_cfg.pts.assigner[:3]
    m.test_cfg.pts.update(nms_pre=100, max_num=50)
    return cfg
