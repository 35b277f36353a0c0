# CenterPoint (voxel) sized for the synthetic KITTI-format benchmark (dm3d_exp.data) on CPU: DM3D's headline
# detector. Self-contained mirror of mmdet3d's centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py
# adapted to KITTI-format data: range x 0..51.2 m, y +-38.4 m, z -3..1 m; 0.1 x 0.1 x 0.2 m voxels (sparse
# grid 21 x 768 x 512) through a spconv SparseEncoder (SubMConv3d / SparseConv3d, 16-32-64-64 channels,
# stride 8), a dense SECOND backbone (64/128) and SECONDFPN back to stride 8 (0.8 m cells), and a
# velocity-free CenterHead (tasks [Pedestrian, Cyclist], [Car]; 32-channel heads). `data_root` is replaced at runtime by
# the generated dataset path (dm3d_exp.training.recipe.load_config).
data_root = 'data/synth/'
class_names = ['Pedestrian', 'Cyclist', 'Car']
metainfo = dict(classes=class_names)
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]
voxel_size = [0.1, 0.1, 0.2]
grid_size = [512, 768, 20]  # x, y, z voxels
out_size_factor = 8
backend_args = None
default_scope = 'mmdet3d'
# numpy>=1.24 shim for mmdet3d's ObjectSample; CenterHeadNoVelocity; KittiFrameIdDataset
# (see dm3d_exp.adapters.mmdet3d_modules)
custom_imports = dict(imports=['dm3d_exp.adapters.mmdet3d_modules'], allow_failed_imports=False)

model = dict(
    type='CenterPoint',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_layer=dict(
            max_num_points=10,
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=(40000, 60000))),
    pts_voxel_encoder=dict(type='HardSimpleVFE', num_features=4),
    pts_middle_encoder=dict(
        type='SparseEncoder',
        in_channels=4,
        sparse_shape=[grid_size[2] + 1, grid_size[1], grid_size[0]],
        output_channels=128,
        order=('conv', 'norm', 'act'),
        encoder_channels=((16, ), (32, 32), (64, 64), (64, 64)),
        # z: 21 -> 11 -> 6 -> 3 -> conv_out (k3, s2) -> 1, so the BEV map has 128 channels
        encoder_paddings=((1, ), (1, 1), (1, 1), (1, 1)),
        block_type='conv_module'),
    pts_backbone=dict(
        type='SECOND',
        in_channels=128,
        out_channels=[64, 128],
        layer_nums=[3, 5],
        layer_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        conv_cfg=dict(type='Conv2d', bias=False)),
    pts_neck=dict(
        type='SECONDFPN',
        in_channels=[64, 128],
        out_channels=[64, 64],
        upsample_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        upsample_cfg=dict(type='deconv', bias=False),
        use_conv_for_no_stride=True),
    pts_bbox_head=dict(
        type='CenterHeadNoVelocity',
        in_channels=128,
        tasks=[
            dict(num_class=2, class_names=['Pedestrian', 'Cyclist']),
            dict(num_class=1, class_names=['Car']),
        ],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2)),
        share_conv_channel=64,
        bbox_coder=dict(
            type='CenterPointBBoxCoder',
            pc_range=point_cloud_range[:2],
            post_center_range=[-10.0, -50.0, -10.0, 61.2, 50.0, 10.0],
            max_num=100,
            score_threshold=0.1,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2],
            code_size=7),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3, head_conv=32),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
        norm_bbox=True),
    train_cfg=dict(
        pts=dict(
            point_cloud_range=point_cloud_range,
            grid_size=grid_size,
            voxel_size=voxel_size,
            out_size_factor=out_size_factor,
            dense_reg=1,
            gaussian_overlap=0.1,
            max_objs=100,
            min_radius=2,
            # reg(2) height dim(3) rot(2) and the two unused velocity entries (CenterHeadNoVelocity)
            code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])),
    test_cfg=dict(
        pts=dict(
            pc_range=point_cloud_range[:2],
            post_center_limit_range=[-10.0, -50.0, -10.0, 61.2, 50.0, 10.0],
            max_per_img=100,
            max_pool_nms=False,
            min_radius=[0.85, 4],
            score_threshold=0.1,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2],
            nms_type='rotate',
            pre_max_size=1000,
            post_max_size=83,
            nms_thr=0.1)))

db_sampler = dict(
    data_root=data_root,
    info_path=data_root + 'kitti_dbinfos_train.pkl',
    rate=1.0,
    prepare=dict(filter_by_difficulty=[-1], filter_by_min_points=dict(Car=5, Pedestrian=5, Cyclist=5)),
    classes=class_names,
    sample_groups=dict(Car=15, Pedestrian=10, Cyclist=10),
    points_loader=dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4,
                       backend_args=backend_args),
    backend_args=backend_args)

train_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='ObjectSample', db_sampler=db_sampler),
    dict(type='ObjectNoise', num_try=100, translation_std=[0.25, 0.25, 0.25], global_rot_range=[0.0, 0.0],
         rot_range=[-0.15707963267, 0.15707963267]),
    dict(type='RandomFlip3D', flip_ratio_bev_horizontal=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.78539816, 0.78539816], scale_ratio_range=[0.95, 1.05]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_labels_3d', 'gt_bboxes_3d'])
]
test_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'])
]

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='KittiDataset',
        data_root=data_root,
        ann_file='kitti_infos_train.pkl',
        data_prefix=dict(pts='training/velodyne_reduced'),
        pipeline=train_pipeline,
        modality=dict(use_lidar=True, use_camera=False),
        test_mode=False,
        metainfo=metainfo,
        box_type_3d='LiDAR',
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='KittiFrameIdDataset',  # keeps the frame id as sample_idx (DevkitKittiMetric's lookup key)
        data_root=data_root,
        ann_file='kitti_infos_val.pkl',
        data_prefix=dict(pts='training/velodyne_reduced'),
        pipeline=test_pipeline,
        modality=dict(use_lidar=True, use_camera=False),
        test_mode=True,
        metainfo=metainfo,
        box_type_3d='LiDAR',
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='DevkitKittiMetric', ann_file=data_root + 'kitti_infos_val.pkl', metric='bbox',
                     classes=['Car', 'Pedestrian', 'Cyclist'], backend_args=backend_args)
test_evaluator = val_evaluator

# One-cycle AdamW (as mmdet3d's cyclic KITTI schedules): lr rises 10x over the first 40 % of the epochs,
# then anneals to 1e-4 of the base lr; momentum (beta1) moves opposite.
lr = 3e-4
# 6 epochs of the 800 synthetic training frames: ~60 min on one core (about 3 s per iteration of 4 frames)
max_epochs = 6
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.95, 0.99), weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs * 0.4, eta_min=lr * 10, begin=0, end=max_epochs * 0.4,
         by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs * 0.6, eta_min=lr * 1e-4, begin=max_epochs * 0.4,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=max_epochs * 0.4, eta_min=0.85 / 0.95, begin=0,
         end=max_epochs * 0.4, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=max_epochs * 0.6, eta_min=1, begin=max_epochs * 0.4,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=2)  # the last epoch is always validated
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
