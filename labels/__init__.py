"""The saved labels as datasets: reading a labels folder and writing the formats training code
reads (COCO, YOLO segmentation, LabelMe, Pascal VOC)."""
