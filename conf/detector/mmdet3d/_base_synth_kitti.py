# Shared by the detectors of the synthetic KITTI-format benchmark (dm3d_exp.data): classes, the range
# x 0..51.2 m, y +-38.4 m, z -3..1 m (KITTI moderate objects, >= 25 px high, lie within ~45 m), mmdet3d's
# KITTI 3-class LiDAR pipelines (GT sampling, object noise, flip, global rot/scale), loaders, the
# devkit-exact KITTI metric, and a short one-cycle AdamW schedule sized for a CPU background job.
# Each detector config (`_base_ = ['./_base_synth_kitti.py']`) adds its model and voxelisation.
# `data_root` is replaced at runtime by the generated dataset path (dm3d_exp.training.recipe.load_config).
data_root = 'data/synth/'
class_names = ['Pedestrian', 'Cyclist', 'Car']
metainfo = dict(classes=class_names)
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]
backend_args = None
default_scope = 'mmdet3d'
# numpy>=1.24 shim for mmdet3d's ObjectSample; KittiFrameIdDataset (see dm3d_exp.adapters.mmdet3d_modules)
custom_imports = dict(imports=['dm3d_exp.adapters.mmdet3d_modules'], allow_failed_imports=False)

db_sampler = dict(
    data_root=data_root,
    info_path=data_root + 'kitti_dbinfos_train.pkl',
    rate=1.0,
    prepare=dict(filter_by_difficulty=[-1], filter_by_min_points=dict(Car=5, Pedestrian=5, Cyclist=5)),
    classes=class_names,
    sample_groups=dict(Car=15, Pedestrian=15, Cyclist=15),
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
        type='KittiFrameIdDataset',  # sample_idx = the KITTI frame id (not the list position)
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
# 5 epochs of the 800 synthetic training frames (~1 h on one core); `dm3d-train max_epochs=N` stretches
# the one-cycle schedule, and each shipped manifest records the options it was trained with.
max_epochs = 5
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
