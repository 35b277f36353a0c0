# PointPillars sized for the synthetic KITTI-format benchmark (dm3d_exp.data) on CPU: mmdet3d's
# pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py with 0.2 m pillars (256 x 384 grid over the shared
# range) and channels halved (pillar 32, backbone 32/64/128, neck 3 x 64): ~1.2 M parameters, 4.1 GMACs.
# Data, pipelines, metric and schedule: _base_synth_kitti.py.
_base_ = ['./_base_synth_kitti.py']
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]
voxel_size = [0.2, 0.2, 4]
grid_xy = [256, 384]  # (x, y) pillars; divisible by 8 (three stride-2 stages)

model = dict(
    type='VoxelNet',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_layer=dict(
            max_num_points=32,
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=(16000, 40000))),
    voxel_encoder=dict(
        type='PillarFeatureNet',
        in_channels=4,
        feat_channels=[32],
        with_distance=False,
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    middle_encoder=dict(type='PointPillarsScatter', in_channels=32, output_shape=[grid_xy[1], grid_xy[0]]),
    backbone=dict(
        type='SECOND',
        in_channels=32,
        layer_nums=[3, 5, 5],
        layer_strides=[2, 2, 2],
        out_channels=[32, 64, 128]),
    neck=dict(
        type='SECONDFPN',
        in_channels=[32, 64, 128],
        upsample_strides=[1, 2, 4],
        out_channels=[64, 64, 64]),
    bbox_head=dict(
        type='Anchor3DHead',
        num_classes=3,
        in_channels=192,
        feat_channels=192,
        use_direction_classifier=True,
        assign_per_class=True,
        anchor_generator=dict(
            type='AlignedAnchor3DRangeGenerator',
            ranges=[
                [0, -38.4, -0.6, 51.2, 38.4, -0.6],
                [0, -38.4, -0.6, 51.2, 38.4, -0.6],
                [0, -38.4, -1.78, 51.2, 38.4, -1.78],
            ],
            sizes=[[0.8, 0.6, 1.73], [1.76, 0.6, 1.73], [3.9, 1.6, 1.56]],
            rotations=[0, 1.57],
            reshape_out=False),
        diff_rad_by_sin=True,
        bbox_coder=dict(type='DeltaXYZWLHRBBoxCoder'),
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='mmdet.SmoothL1Loss', beta=1.0 / 9.0, loss_weight=2.0),
        loss_dir=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=0.2)),
    train_cfg=dict(
        assigner=[
            dict(  # Pedestrian
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='mmdet3d.BboxOverlapsNearest3D'),
                pos_iou_thr=0.5, neg_iou_thr=0.35, min_pos_iou=0.35, ignore_iof_thr=-1),
            dict(  # Cyclist
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='mmdet3d.BboxOverlapsNearest3D'),
                pos_iou_thr=0.5, neg_iou_thr=0.35, min_pos_iou=0.35, ignore_iof_thr=-1),
            dict(  # Car
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='mmdet3d.BboxOverlapsNearest3D'),
                pos_iou_thr=0.6, neg_iou_thr=0.45, min_pos_iou=0.45, ignore_iof_thr=-1),
        ],
        allowed_border=0,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        use_rotate_nms=True,
        nms_across_levels=False,
        nms_thr=0.01,
        score_thr=0.1,
        min_bbox_size=0,
        nms_pre=100,
        max_num=50))

