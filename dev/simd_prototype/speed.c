#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include "fl_simd.h"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){ long n=4096*1000; float*x=malloc(n*4),*y=malloc(n*4);
 for(long i=0;i<n;i++) x[i]=-(rand()%10000)/1000.0f;
 double bm=1e9,be=1e9,bs=1e9,bc=1e9, sink=0;
 for(int r=0;r<10;r++){
   double t=now(); for(long k=0;k<4096;k++) sink+=fl_row_max_f32(x+k*1000,1000); double a=now()-t;
   t=now(); for(long k=0;k<4096;k++) sink+=fl_exp_sum_f32(x+k*1000,1000,0.f,1.f,y+k*1000); double b=now()-t;
   t=now(); for(long k=0;k<4096;k++) fl_scale_f32(y+k*1000,1000,0.5); double c=now()-t;
   t=now(); memcpy(y,x,n*4); double d=now()-t;
   if(a<bm)bm=a; if(b<be)be=b; if(c<bs)bs=c; if(d<bc)bc=d; }
 printf("max %.2f  exp+store+sum %.2f  scale %.2f  copy %.2f ms (%g)\n", bm*1e3, be*1e3, bs*1e3, bc*1e3, sink);
}
